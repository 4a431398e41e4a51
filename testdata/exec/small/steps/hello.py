"""Step hello: proves the image's Python, its requirement and jq are there."""
import shutil

import six

print(f"hello from six {six.__version__}, jq at {shutil.which('jq')}")
