from codeprm.cli import main

main()
