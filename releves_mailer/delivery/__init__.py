"""Statement mails: composition, signing and delivery into the boxes."""
