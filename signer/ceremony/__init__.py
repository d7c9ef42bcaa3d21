"""Key ceremonies: making and rotating roots, and the development trust repository."""
