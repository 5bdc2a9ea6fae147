"""How much of an archive is its header: the first N images of a data set compressed as `vaezip bench -c
vaezip-archive` compresses them (named as the bench names them), and the file's bytes, its header as stored (deflated
from format 11 on) and as it is plainly.

    python scripts/archive_header.py mnist-test -n 2000 -m pretrained/mnist.safetensors

(the README's MNIST paragraph: 225,848 bytes, a header of 22,921 bytes plainly stored in 4,472).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec import container  # noqa: E402
from codec.header import to_binary  # noqa: E402
from vaezip import data  # noqa: E402
from vaezip.api import compress_images, load_model  # noqa: E402
from vaezip.bench.learned import to_pil  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_set", help="a data set's name, a folder or an .npz, as vaezip bench takes it")
    parser.add_argument("-n", "--limit", type=int, default=None, help="the first N images")
    parser.add_argument("-m", "--model", default=None, help="a model name or weights file (default: the shipped one)")
    args = parser.parse_args()
    images = data.load(args.data_set, limit=args.limit)
    named = [(images.image_name(i), to_pil(images.images[i])) for i in range(len(images))]
    result = compress_images(named, load_model(args.model) if args.model else None)
    version, header, words = container.read_versioned(result.data)
    plain = len(to_binary(header, len(words), version)) if version in container.BINARY_VERSIONS else None
    print(f"{args.data_set}: {len(named)} images, format {version}: {len(result.data)} bytes, the header "
          f"{result.header_bytes} bytes as stored" + (f", {plain} plainly" if plain is not None else ""))


if __name__ == "__main__":
    main()
