def f(x): x | .a; reduce range(10) as $i (0; . + $i) | f(.) | until(. > 3; . + 1) # c
"s\(.a)"