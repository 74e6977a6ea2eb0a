"""The modelled kernel's mm/: state (frames, page tables, VMAs) and one module per kernel file."""
