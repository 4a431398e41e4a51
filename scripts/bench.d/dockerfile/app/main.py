import six
import tabulate

print(tabulate.tabulate([["six", six.__version__]]))
