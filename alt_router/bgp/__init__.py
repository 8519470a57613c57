"""BGP for the ALT overlay, spoken by ExaBGP: its configuration and its process API."""
