// The radix select of sample_split.cu's nucleus cut, shared with sample_cut.cu: three levels of 10-bit digits
// of p's f32 bits, masses as fixed-point integers, and the cut's state per row.

#define DIGIT_BITS 10u
#define HIST 1024u

// Fields of a row's cut state (u64 [4]), written by sample_cut.cu.
#define CUT_STATE 0   // CUT_ON, or CUT_OFF: the row's whole mass is below top_p (rounding), every token is in
#define CUT_PREFIX 1  // the digits chosen so far; after level 2 the bits of p_c
#define CUT_ABOVE 2   // the mass of the tokens above the chosen digits: after level 2, M(k_c + 1)
#define CUT_NEED 3    // after level 2: how many tokens equal to p_c are in, the lowest ids
#define CUT_OFF 0ull
#define CUT_ON 1ull

// p · 2^56 truncated (exact for p ≥ 2^-33; less loses under 2^-56): a row of up to 2^31 tokens sums to
// less than 2^64 even where its f32 probabilities add up to more than 1 by rounding.
DSV3_DEV u64 fixed_mass(float p) { return (u64)((double)p * 72057594037927936.0); }

// top_p on the same scale, rounded up: a fixed-point mass reaches it exactly when the mass it stands for
// reaches top_p.
DSV3_DEV u64 fixed_top(double top_p) { return (u64)ceil(top_p * 72057594037927936.0); }
