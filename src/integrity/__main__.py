from integrity.cli import main

main()
