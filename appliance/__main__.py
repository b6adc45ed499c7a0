"""``python -m appliance ...`` runs the same command line as ``cairn ...``."""

from appliance.cli.main import main

if __name__ == "__main__":
    main()
