import os
import sys

# tests import the float64 reference as a plain module
sys.path.insert(0, os.path.dirname(__file__))
