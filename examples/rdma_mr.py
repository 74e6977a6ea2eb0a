#!/usr/bin/env python3
"""The RDMA test of 6d0a07edd17c: `python examples/rdma_mr.py --kernel v4.5 [--mapping pte]`.

Exit status 1 on a compare error (on any --kernel given), 0 when every iteration read back
what was written.
"""

import sys

from cowlab.workloads.rdma import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], prog="rdma_mr.py"))
