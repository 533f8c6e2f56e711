"""The daemon's log lines on stderr: batched on the event loop, never reordered, never held back long."""

from __future__ import annotations

import asyncio
import logging
import threading

from clublist.cli.run import BatchedStreamHandler


class Recording:
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


def logger_to(stream: Recording, name: str) -> logging.Logger:
    handler = BatchedStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger(f"clublist.test_log_output.{name}")
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


async def until(condition: object, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)  # the handler's own timer is what is waited for

    await asyncio.wait_for(poll(), timeout)


def test_lines_on_the_event_loop_go_out_together_after_a_moment() -> None:
    stream = Recording()
    log = logger_to(stream, "together")

    async def main() -> None:
        log.info("one")
        log.info("two")
        assert stream.writes == []  # held for the moment
        await until(lambda: stream.writes)
        assert stream.writes == ["INFO one\nINFO two\n"]

    asyncio.run(main())


def test_a_warning_writes_what_waits_and_itself_at_once_in_order() -> None:
    stream = Recording()
    log = logger_to(stream, "warning")

    async def main() -> None:
        log.info("delivered")
        log.warning("deferred")
        assert stream.writes == ["INFO delivered\nWARNING deferred\n"]
        log.info("later")
        await until(lambda: len(stream.writes) == 2)
        assert stream.writes[1] == "INFO later\n"

    asyncio.run(main())


def test_a_line_from_another_thread_is_written_at_once_after_the_waiting_ones() -> None:
    stream = Recording()
    log = logger_to(stream, "thread")

    async def main() -> None:
        log.info("on the loop")
        other = threading.Thread(target=log.info, args=("from the writer",))
        other.start()
        other.join()
        assert stream.writes == ["INFO on the loop\nINFO from the writer\n"]

    asyncio.run(main())
    log.info("no loop running")
    assert stream.writes[-1] == "INFO no loop running\n"


def test_lines_still_waiting_when_the_loop_ends_are_written_by_the_flush_at_exit() -> None:
    stream = Recording()
    log = logger_to(stream, "exit")

    async def main() -> None:
        log.info("stopped")

    asyncio.run(main())  # the loop closes before the handler's timer runs
    log.handlers[0].flush()  # what logging.shutdown does at exit
    assert stream.writes == ["INFO stopped\n"]
