"""vividhead inspect: summary, funnel, verification, what-if and the HTML report."""
