"""Tools beside the product: the photo renderer and the HTTP load generator. Tests and
benchmarks use them; the library layers never do.
"""
