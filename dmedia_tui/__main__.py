from dmedia_tui.cli import main

main()
