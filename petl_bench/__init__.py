"""petl-bench: parameter-efficient transfer learning of CLIP on cross-domain multi-task benchmarks."""

from .quiet import quiet_third_parties

__version__ = "0.1.0"

quiet_third_parties()  # Lightning's banners and tips off for the Python API too (quiet.py)
