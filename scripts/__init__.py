"""Scripts that make the documentation's figures from public data."""
