"""``python -m mcached``: the same as the ``mcached`` command."""

from mcached.cli import main

if __name__ == "__main__":
    main()
