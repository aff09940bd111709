"""`python -m chexcft` (also what torchrun runs with `-m chexcft`)."""

from chexcft.cli import main

if __name__ == "__main__":
    main()
