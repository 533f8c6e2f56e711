from clublist.cli import main

main()
