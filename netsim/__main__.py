"""``python -m netsim``: the same command line as the ``netsim`` script (handy under profilers)."""

from netsim.cli import main

if __name__ == "__main__":
    main()
