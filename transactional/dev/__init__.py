"""Development-only pages. Every view here 404s unless DEBUG is on."""
