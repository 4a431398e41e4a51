import six

print(f"six {six.__version__}")
