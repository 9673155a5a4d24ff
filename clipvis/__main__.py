"""`python -m clipvis ...` runs the command-line application (what `torchrun -m clipvis ...` starts on each rank)."""

from clipvis.cli.launcher import main

if __name__ == "__main__":
    main()
