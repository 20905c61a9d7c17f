"""What several test modules share (no test imports a conftest or another test module)."""
