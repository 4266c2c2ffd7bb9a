"""The one inference and the error control every statement of a study goes through: a contrast's t
statement (`inference`, `contrasts`), multiple testing with matching intervals (`multiplicity`,
`decisions`), the sentence (`statement`) and the frame checks they share (`frames`)."""
