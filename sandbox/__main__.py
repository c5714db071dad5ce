"""`python -m sandbox [--bc-port N] [--dataverse-port N] [--entra-port N] [--ca-file PATH] [--time-factor F]
[--without-extension]`. Other readings come from BCSYNC_SANDBOX_* variables (sandbox/config.py)."""

from __future__ import annotations

import argparse

from sandbox.config import SandboxConfig
from sandbox.main import run


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--bc-port", type=int)
    parser.add_argument("--dataverse-port", type=int)
    parser.add_argument("--entra-port", type=int)
    parser.add_argument("--ca-file")
    parser.add_argument("--time-factor", type=float)
    parser.add_argument("--without-extension", action="store_true",
                        help="BC without the bcsync extension: its custom API answers 404")
    args = parser.parse_args()
    run(SandboxConfig.from_env(bc_port=args.bc_port, dataverse_port=args.dataverse_port,
                               entra_port=args.entra_port, ca_file=args.ca_file, time_factor=args.time_factor,
                               custom_api=False if args.without_extension else None))


if __name__ == "__main__":
    main()
