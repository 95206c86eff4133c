"""The catalog domain: partners, products, programs, tariffs, offers (as applied from catalog/)."""
