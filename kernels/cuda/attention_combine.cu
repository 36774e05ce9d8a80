// Placeholder: this kernel is being written.
