"""Postfix in front of clublist: the settings it needs (setup.py), what a Postfix has (postconf.py).

The deployment is before-queue.  Postfix's public smtpd hands each SMTP session live to
clublist (``smtpd_proxy_filter``), so a refusal from clublist reaches the real client in its
own session; relaying the club's mail after the queue instead would accept first and turn
every refusal into a bounce to a (usually forged) sender.  clublist's outgoing mail enters
Postfix on a second, loopback-only smtpd without the filter, and the mail Postfix itself has
for the club domain (delivery reports to the bounce address) reaches clublist through the
transport map.
"""
