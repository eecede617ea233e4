import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # _favor_helpers, the references shared by these tests
