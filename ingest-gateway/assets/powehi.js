/* Powehi tracker: placeholder until the tracker lands (issue 13, point 7). */
