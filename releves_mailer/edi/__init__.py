"""EDI tax deposits (UN/EDIFACT INFENT interchanges): reading, the deposit store per account,
and the discovery of redevables from the companies that declared."""
