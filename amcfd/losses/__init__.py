"""Losses: ``basic`` holds the AMSNet mask L1 (Eq. 4), the isotropic TV smoothness prior L_p (Eq. 9)
and plain L1, as functions and as registered ``LOSSES`` modules with a ``loss_weight``."""
