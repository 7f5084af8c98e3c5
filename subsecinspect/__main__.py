from subsecinspect.cli import main

main()
