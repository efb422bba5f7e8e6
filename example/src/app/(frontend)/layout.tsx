import type { ReactNode } from 'react'

export const metadata = {
  title: 'Payload deploy example',
}

export default function FrontendLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>{children}</body>
    </html>
  )
}
