"""Folders the tests read: the checkout, tests/, the official fixtures and the sample data."""
import os

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(TESTS)
FIXTURES = os.path.join(TESTS, "fixtures")
DATA = os.path.join(TESTS, "data")
