"""python valid.py -opt options/.../X.yml  (see README)."""
import sys

from amcfd.cli import main_valid

if __name__ == "__main__":
    sys.exit(main_valid())
