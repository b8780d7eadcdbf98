from geochange.cli import main

main()
