from escrowflow.cli import main

main()
