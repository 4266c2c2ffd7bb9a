"""What the `segstudy` analysis commands do (analyze, report, recommend, status, the end-of-study
summary), as plain functions the CLI calls.
"""
