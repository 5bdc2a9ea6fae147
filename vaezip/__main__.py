from vaezip.command import main

main()
