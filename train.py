"""python train.py -opt options/.../X.yml  (see README)."""
import sys

from amcfd.cli import main_train

if __name__ == "__main__":
    sys.exit(main_train())
