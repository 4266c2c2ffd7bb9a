"""What a study states: the findings per level (`findings`), the claims (`claims`, `breakdown`),
the pairwise tables (`pairwise`), the sequential confirm's decisions (`sequential`)."""
