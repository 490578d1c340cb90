import sys

from pi0_ros.serve.cli import main

sys.exit(main())
