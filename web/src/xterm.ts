// xterm.js and its styles, loaded with the first terminal (not with the dashboard).
import '@xterm/xterm/css/xterm.css'

export { Terminal } from '@xterm/xterm'
export { FitAddon } from '@xterm/addon-fit'
