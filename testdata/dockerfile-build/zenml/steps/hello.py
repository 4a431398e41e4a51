import os
import six  # from kiln's requirements layer

print(open("/opt/parent/marker").read().strip(), os.environ["FROM_DOCKERFILE"], six.__version__)
