from pshnotify.cli import main

main()
