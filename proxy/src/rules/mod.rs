//! Allow rules: parsing (`parse`) and the compiled matcher (`policy`).
