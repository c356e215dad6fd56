"""petl-bench: parameter-efficient transfer learning of CLIP on cross-domain multi-task benchmarks."""

__version__ = "0.1.0"
