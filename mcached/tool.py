"""``python -m mcached.tool``: the old home of ``mcached-tool``, kept so that commands and
scripts written for it keep working. The tool lives in `mcached.client.tool`."""

from mcached.client.tool import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
