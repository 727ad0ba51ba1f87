#!/bin/sh
# Stand-in for Bazel's downloaded coverage tools: `bazel coverage` is not
# supported offline in this project (use pytest for coverage instead).
echo "remote_coverage_tools is an offline stub: bazel coverage is not supported here" >&2
exit 1
