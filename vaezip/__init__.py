"""vaezip: neural lossless image compression with hierarchical VAEs and bits-back ANS coding."""
__version__ = "0.1.0"

# Its fork hooks registered with vaezip itself (stdlib only): a host that forks before vaezip loads a model or
# reads a setting has a child whose torch may have lost its threads all the same (process_settings).
from vaezip import process_settings as _process_settings  # noqa: E402,F401
