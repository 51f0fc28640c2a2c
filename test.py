"""python test.py -opt options/.../X.yml  (see README)."""
import sys

from amcfd.cli import main_test

if __name__ == "__main__":
    sys.exit(main_test())
