"""Reliability: hostile input, broken projects, duplicate and concurrent events, AWS faults and
warm-container hygiene.

`make reliability` runs these with the table plugin (tests/reliability/table.py) and prints
every case with its outcome.
"""
